"""Password hashing (Argon2id) and the sign-up password rules.

Argon2 is slow on purpose, so hashing never runs on the event loop: it runs in
a small thread pool, and a login storm costs those threads, not chat traffic.
The parameters are OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane);
bench/README.md says what one hash costs here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 256
COMMON = Path(__file__).resolve().parent / "common_passwords.txt"

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# One thread: Argon2 releases the GIL and takes a whole core while it hashes, so
# one thread leaves the event loop a core of its own on a 2-core machine; a
# login storm queues here (logins wait) instead of stalling chat deliveries.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
# Verified when the username is unknown, so that answer costs what a wrong password costs.
_DUMMY_HASH = HASHER.hash("fleetchat: no such user")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def weakness(password: str) -> str | None:
    """Why a password is refused at sign-up, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if password.casefold() in common_passwords():
        return "that password is on the list of the most common ones"
    return None


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_POOL, HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`; with no stored hash (unknown user) it
    does the same work and answers False."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, _verify, stored, password)
