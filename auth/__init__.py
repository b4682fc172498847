"""Authentication backends (internal SCRAM store; LDAP and tokens later)."""

from auth.base import AuthBackend, AuthError, NoSuchUser, UserExists

__all__ = ["AuthBackend", "AuthError", "NoSuchUser", "UserExists"]
