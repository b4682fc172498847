"""The generated part of the test directory: many users and one group over AD's 1,500-value page.

`python tests/ldap/make_ldif.py 1600 > bulk.ldif` prints it; the slapd fixture calls `bulk()`.
"""

from __future__ import annotations

import sys

BASE = "dc=example,dc=org"
BIG_GROUP = "Everyone"


def bulk(count: int, named: list[str]) -> str:
    """`count` users bulkNNNN and a groupOfNames `Everyone` holding them plus `named`."""
    parts = []
    members = list(named)
    for i in range(1, count + 1):
        uid = f"bulk{i:04d}"
        members.append(uid)
        parts.append(
            f"dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: Bulk User {i}\nsn: User {i}\nuserPassword: {uid}-secret\n"
        )
    group = f"dn: cn={BIG_GROUP},ou=roles,{BASE}\nobjectClass: groupOfNames\ncn: {BIG_GROUP}\n"
    group += "".join(f"member: uid={m},ou=people,{BASE}\n" for m in members)
    return "\n".join([*parts, group])


if __name__ == "__main__":
    print(bulk(int(sys.argv[1]) if len(sys.argv) > 1 else 1600, []))
