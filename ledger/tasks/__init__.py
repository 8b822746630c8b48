"""The task domain (SPEC §3), pure: no I/O, nothing that reaches a database.

* :mod:`ledger.tasks.model` – statuses, event types, commands, ``TaskState``;
* :mod:`ledger.tasks.decider` – ``decide`` (command -> events, or a refusal)
  and ``evolve``/``fold`` (events -> state), the one fold every read uses.

Both modules' names are the package's surface: ``from ledger import tasks``,
then ``tasks.decide(...)``, ``tasks.Submit(...)``, ``tasks.view(state)``.
"""

from ledger.tasks.decider import *  # noqa: F403
from ledger.tasks.decider import __all__ as _decider
from ledger.tasks.model import *  # noqa: F403
from ledger.tasks.model import __all__ as _model

__all__ = [*_decider, *_model]
