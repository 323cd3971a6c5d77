"""The web management interface: server-rendered pages (Jinja2) with htmx, no build step.

`voipcloud.web.setup.install(app)` mounts it on the FastAPI app of `voipcloud.api.app`.
See README.md beside this file for how to add a page.
"""
