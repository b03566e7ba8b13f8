from alliance.db.engine import Database
from tests.factories import give_points, make_membership, make_program


async def test_award_then_balance(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    movement = await give_points(db, membership, program, 50)
    assert movement.balance_after == 50
