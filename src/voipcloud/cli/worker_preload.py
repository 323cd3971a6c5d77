"""What the workers of `serve --workers N` share: imported once, by the fork server they are
forked from (voipcloud.cli.workers), never by the parent or a worker itself.

Importing the application builds most of a worker's start-up memory (the code objects, the
modules' classes and functions, the schemas: about 90 MiB). Made here once, those pages are
shared copy-on-write by every worker. What the imports made is then collected and frozen
(`gc.freeze`): the collector of a worker never walks it, so its collections do not write to
those pages and they stay shared (reference counts still write to the objects a worker
uses; what is never touched after the fork stays shared for the worker's life).
"""

from __future__ import annotations

import gc

import voipcloud.api.app
import voipcloud.cli.serve
import voipcloud.cli.workers

MODULES = (voipcloud.api.app, voipcloud.cli.serve, voipcloud.cli.workers)

gc.collect()
gc.freeze()
