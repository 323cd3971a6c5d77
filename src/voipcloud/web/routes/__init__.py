"""Page routers, one module per page group; `voipcloud.web.setup` includes them all."""
