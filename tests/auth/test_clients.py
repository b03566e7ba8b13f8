import pytest
from sqlalchemy import select

from alliance.auth.clients import (
    ClientRecord,
    authenticate_client,
    create_client,
    disable_client,
    get_client,
)
from alliance.auth.models import OAuthClient, Role
from alliance.db.engine import Database
from alliance.errors import AlreadyExists, ErrorCode, InvalidInput, NotFound
from tests.factories import make_merchant


class TestCreateClient:
    async def test_stores_only_a_hash_of_the_secret(self, db: Database) -> None:
        merchant = await make_merchant(db)
        client_id, secret = await create_client(
            db, name="POS", role=Role.MERCHANT, merchant_id=merchant.id
        )
        assert client_id.startswith("merchant-")
        assert len(secret) == 43  # 32 bytes, url-safe base64
        async with db.autocommit() as conn:
            stored = (await conn.execute(select(OAuthClient.secret_hash))).scalar_one()
        assert len(stored) == 32
        assert secret.encode() not in stored
        assert await get_client(db, client_id) == ClientRecord(
            client_id, "POS", Role.MERCHANT, merchant.id, frozenset()
        )

    async def test_chosen_client_id(self, db: Database) -> None:
        client_id, _ = await create_client(db, name="Ops", role=Role.OPERATOR, client_id="ops-1")
        assert client_id == "ops-1"

    async def test_taken_client_id(self, db: Database) -> None:
        await create_client(db, name="Ops", role=Role.OPERATOR, client_id="ops-1")
        with pytest.raises(AlreadyExists):
            await create_client(db, name="Ops", role=Role.AUDITOR, client_id="ops-1")

    @pytest.mark.parametrize("client_id", ["a", "with space", "colon:id", "x" * 65])
    async def test_invalid_client_id(self, db: Database, client_id: str) -> None:
        with pytest.raises(InvalidInput) as caught:
            await create_client(db, name="Ops", role=Role.OPERATOR, client_id=client_id)
        assert caught.value.field == ("clientId",)

    async def test_member_is_not_a_client_role(self, db: Database) -> None:
        with pytest.raises(InvalidInput) as caught:
            await create_client(db, name="App", role=Role.MEMBER)
        assert caught.value.field == ("role",)

    async def test_merchant_client_needs_a_merchant(self, db: Database) -> None:
        with pytest.raises(InvalidInput) as caught:
            await create_client(db, name="POS", role=Role.MERCHANT)
        assert caught.value.field == ("merchantId",)

    @pytest.mark.parametrize("role", [Role.OPERATOR, Role.AUDITOR])
    async def test_alliance_wide_client_takes_no_merchant(self, db: Database, role: Role) -> None:
        merchant = await make_merchant(db)
        with pytest.raises(InvalidInput) as caught:
            await create_client(db, name="X", role=role, merchant_id=merchant.id)
        assert caught.value.field == ("merchantId",)

    async def test_finance_with_or_without_merchant(self, db: Database) -> None:
        merchant = await make_merchant(db)
        bound, _ = await create_client(db, name="F1", role=Role.FINANCE, merchant_id=merchant.id)
        wide, _ = await create_client(db, name="F2", role=Role.FINANCE)
        assert (await get_client(db, bound)).merchant_id == merchant.id  # type: ignore[union-attr]
        assert (await get_client(db, wide)).merchant_id is None  # type: ignore[union-attr]

    async def test_unknown_merchant(self, db: Database) -> None:
        with pytest.raises(NotFound) as caught:
            await create_client(db, name="POS", role=Role.MERCHANT, merchant_id=999_999)
        assert caught.value.code is ErrorCode.NOT_FOUND


class TestAuthenticateClient:
    async def test_right_secret(self, db: Database) -> None:
        client_id, secret = await create_client(db, name="Ops", role=Role.OPERATOR)
        client = await authenticate_client(db, client_id, secret)
        assert client is not None
        assert client.role is Role.OPERATOR

    async def test_wrong_secret(self, db: Database) -> None:
        client_id, secret = await create_client(db, name="Ops", role=Role.OPERATOR)
        assert await authenticate_client(db, client_id, secret[:-1] + "x") is None
        assert await authenticate_client(db, client_id, "") is None
        assert await authenticate_client(db, client_id, "\udcff") is None

    async def test_unknown_client(self, db: Database) -> None:
        _, secret = await create_client(db, name="Ops", role=Role.OPERATOR)
        assert await authenticate_client(db, "nobody", secret) is None

    async def test_disabled_client(self, db: Database) -> None:
        client_id, secret = await create_client(db, name="Ops", role=Role.OPERATOR)
        assert await disable_client(db, client_id)
        assert await authenticate_client(db, client_id, secret) is None
        assert await get_client(db, client_id) is None
        assert not await disable_client(db, client_id)
