"""The authentication backend protocol: one backend instance per virtual host.

`username` is always the already-prepared JID localpart (UsernameCaseMapped); the caller
prepares it. Passwords are raw; backends prepare them (PRECIS OpaqueString) themselves.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from auth.scram import ScramCredentials


class AuthError(Exception):
    """The backend cannot answer (storage or directory unavailable...).

    The stream maps it to SASL <temporary-auth-failure/>, never to <not-authorized/>.
    """


class UserExists(AuthError):
    pass


class NoSuchUser(AuthError):
    pass


@runtime_checkable
class AuthBackend(Protocol):
    name: str
    # True: stored SCRAM keys, so SASL SCRAM-* can be offered; False: PLAIN only (e.g. LDAP).
    supports_scram: bool

    async def get_scram_credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        """Stored keys for `hash_name` ("SHA-1", "SHA-256", "SHA-512"); None = no such user
        (or no SCRAM keys for it yet). Must cost no key derivation: logins are HMACs only."""
        ...

    async def check_password(self, username: str, password: str) -> bool: ...

    async def user_exists(self, username: str) -> bool: ...

    async def create_user(self, username: str, password: str) -> None:
        """Raises UserExists; ValueError for an unacceptable password."""
        ...

    async def set_password(self, username: str, password: str) -> None:
        """Raises NoSuchUser; ValueError for an unacceptable password."""
        ...

    async def delete_user(self, username: str) -> None:
        """Raises NoSuchUser."""
        ...

    async def list_users(self) -> list[str]: ...
