"""The event's fields are declared twice, for two audiences: ``Envelope`` (the
dict every append, read, export and fold passes around) and ``EventOut`` (what
/openapi.json promises, with its bounds). They must not drift apart."""

from __future__ import annotations

from ledger.api.models import EventOut
from ledger.events import Envelope


def test_the_api_event_model_has_the_envelopes_fields_in_its_order() -> None:
    assert list(EventOut.model_fields) == list(Envelope.__annotations__)
    assert set(Envelope.__required_keys__) == set(Envelope.__annotations__)
    assert all(f.is_required() for f in EventOut.model_fields.values())
