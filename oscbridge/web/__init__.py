"""Mission Control in the browser: the web page the daemon serves (docs/web.md).

`server` is the HTTP side (aiohttp, in the daemon's own event loop), `guard` decides who may ask what, `feed`
pushes live frames to open pages, `token` keeps the per-installation secret that lets a page change things, and
`static/` holds the page itself (no build step, nothing from a CDN).
"""
