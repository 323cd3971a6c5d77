"""The built-in software handlers, one module per role (docs/roles.md).

On by default (`[software] enabled = false` in the agent's configuration file turns them
off); a role with its own `[roles.<code>]` section keeps the command handler, and roles
without a module here (wk, dd, es, us, ic) always do.
"""

from __future__ import annotations

from voipcloud.agent.roles.base import SoftwareContext, SoftwareRole
from voipcloud.agent.roles.jabber import Prosody
from voipcloud.agent.roles.pbx import Asterisk
from voipcloud.agent.roles.que import RabbitMQ
from voipcloud.agent.roles.sip import Kamailio
from voipcloud.agent.roles.sql import MariaDB
from voipcloud.agent.roles.web import Nginx

BUILTIN: dict[str, type[SoftwareRole]] = {
    role.code: role for role in (Kamailio, Prosody, RabbitMQ, MariaDB, Nginx, Asterisk)
}

__all__ = ["BUILTIN", "SoftwareContext", "SoftwareRole"]
