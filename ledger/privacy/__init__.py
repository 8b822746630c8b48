"""Protected fields, erasure by key destruction, retention and legal hold
(docs/privacy.md is the contract).

* :mod:`ledger.privacy.fields` – which task types protect which fields, the
  envelope of a protected value, and the walks over event data (pure);
* :mod:`ledger.privacy.crypto` – AES-256-GCM, key wrapping, the KEK file;
* :mod:`ledger.privacy.keystore` – the data keys' table;
* :mod:`ledger.privacy.service` – sealing a command's events, revealing reads;
* :mod:`ledger.privacy.erasure` – ForgetSubject (four eyes) and legal holds;
* :mod:`ledger.privacy.retention` – what expires, and expiring it.
"""
