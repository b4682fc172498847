"""A room's configuration and its XEP-0004 form (XEP-0045 §10.2, FORM_TYPE muc#roomconfig).

`RoomConfig` is plain data stored with persistent rooms; `form()` renders it for an owner and
`apply_submission()` reads a submitted form back, refusing values outside the service limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..protocol import namespaces as ns
from ..protocol.forms import Field, FormError, boolean, build, single
from ..protocol.stanza import Element

FORM_TYPE = ns.MUC_ROOMCONFIG
_P = "muc#roomconfig_"
ALLOW_PM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")


@dataclass(slots=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password_protected: bool = False
    password: str = ""
    whois: str = "moderators"  # "anyone": a non-anonymous room
    change_subject: bool = False  # participants may change the subject
    allow_invites: bool = False  # participants may invite (members-only rooms)
    allow_pm: str = "anyone"
    max_users: int = 0  # 0: the service limit
    history_length: int = 20  # messages kept for history on join

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> RoomConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"


def _bool(var: str, label: str, value: bool) -> Field:
    return Field(_P + var, "boolean", label, ["1" if value else "0"])


def form(config: RoomConfig, max_users: int, max_history: int) -> Element:
    """The configuration form an owner fills in (§10.1.3, §10.2)."""
    sizes = sorted({n for n in (10, 20, 30, 50, 100, 200, 500, 1000) if n <= max_users})
    users = config.max_users or max_users
    fields_ = [
        Field(_P + "roomname", "text-single", "Room name", [config.name]),
        Field(_P + "roomdesc", "text-single", "Description", [config.description]),
        _bool("persistentroom", "Keep the room when the last occupant leaves", config.persistent),
        _bool("publicroom", "List the room in the service's room list", config.public),
        _bool("membersonly", "Only members may enter", config.members_only),
        _bool("moderatedroom", "Only participants with voice may speak", config.moderated),
        _bool("passwordprotectedroom", "Entering needs a password", config.password_protected),
        Field(_P + "roomsecret", "text-private", "Password", [config.password]),
        Field(
            _P + "whois",
            "list-single",
            "Who may see occupants' real JIDs",
            [config.whois],
            [("Moderators", "moderators"), ("Anyone", "anyone")],
        ),
        _bool("changesubject", "Participants may change the subject", config.change_subject),
        _bool("allowinvites", "Participants may invite others", config.allow_invites),
        Field(
            _P + "allowpm",
            "list-single",
            "Who may send private messages",
            [config.allow_pm],
            [(v.capitalize(), v) for v in ALLOW_PM],
        ),
        Field(
            _P + "maxusers",
            "list-single",
            "Maximum number of occupants",
            [str(users)],
            [(str(n), str(n)) for n in sorted({*sizes, max_users, users})],
        ),
        Field(
            "muc#maxhistoryfetch",
            "text-single",
            f"Messages shown to newcomers (at most {max_history})",
            [str(config.history_length)],
        ),
    ]
    return build(FORM_TYPE, fields_, title="Room configuration")


def apply_submission(
    config: RoomConfig, values: dict[str, list[str]], max_users: int, max_history: int
) -> RoomConfig:
    """A new config from a submitted form; fields left out keep their value. FormError."""
    new = RoomConfig.from_doc(config.to_doc())
    new.name = single(values, _P + "roomname", new.name) or ""
    new.description = single(values, _P + "roomdesc", new.description) or ""
    new.persistent = boolean(values, _P + "persistentroom", new.persistent)
    new.public = boolean(values, _P + "publicroom", new.public)
    new.members_only = boolean(values, _P + "membersonly", new.members_only)
    new.moderated = boolean(values, _P + "moderatedroom", new.moderated)
    new.password_protected = boolean(values, _P + "passwordprotectedroom", new.password_protected)
    new.password = single(values, _P + "roomsecret", new.password) or ""
    new.whois = _choice(values, _P + "whois", WHOIS, new.whois)
    new.change_subject = boolean(values, _P + "changesubject", new.change_subject)
    new.allow_invites = boolean(values, _P + "allowinvites", new.allow_invites)
    new.allow_pm = _choice(values, _P + "allowpm", ALLOW_PM, new.allow_pm)
    new.max_users = _number(values, _P + "maxusers", new.max_users, max_users)
    new.history_length = _number(values, "muc#maxhistoryfetch", new.history_length, max_history)
    if new.password_protected and not new.password:
        raise FormError("a password-protected room needs a password")
    return new


def _choice(values: dict[str, list[str]], var: str, choices: tuple[str, ...], old: str) -> str:
    value = single(values, var, old) or old
    if value not in choices:
        raise FormError(f"{var} must be one of {', '.join(choices)}")
    return value


def _number(values: dict[str, list[str]], var: str, old: int, limit: int) -> int:
    text = single(values, var)
    if text is None:
        return old
    if text.strip().lower() in ("", "none"):
        return 0 if var.endswith("maxusers") else old
    try:
        value = int(text)
    except ValueError:
        raise FormError(f"{var} must be a number") from None
    if value < 0 or value > limit:
        raise FormError(f"{var} must be between 0 and {limit}")
    return value
