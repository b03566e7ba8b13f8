"""Alliance members (one person) and memberships (their account at one program)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class Member(Base):
    __tablename__ = "member"

    id: Mapped[int] = id_column()
    display_name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    merged_into_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("member.id"))
    """Set when a merge folded this member into another (alliance/identity/merge.py)."""
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set when the member's personal data was erased (pseudonymised)."""


class Membership(Base):
    __tablename__ = "membership"

    id: Mapped[int] = id_column()
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    member_number: Mapped[str] = mapped_column(Text)
    """The merchant's own number for this member, unique within the program."""
    status: Mapped[str] = mapped_column(Text, server_default="active")
    segments: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    """The merchant's member segments (e.g. `students`), which promotion audiences name."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("program_id", "member_number", name="uq_membership_program_number"),
        UniqueConstraint("program_id", "member_id", name="uq_membership_program_member"),
        CheckConstraint("status IN ('active', 'closed')", name="status"),
        Index("ix_membership_program", "program_id", "id"),
    )
