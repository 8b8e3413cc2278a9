from gateway.simulator import play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS


def test_missed_call_becomes_lead(app, configured, poster, work, db, fake_twilio):
    lines = list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    print("\n".join(lines))
    from sqlalchemy import select

    from gateway.models import Call, Lead, Task

    with db.session() as s:
        lead = s.scalar(select(Lead))
        call = s.scalar(select(Call))
        task = s.scalar(select(Task))
        assert lead is not None and call.outcome == "missed" and task is not None
        assert lead.owner is not None
    work()
