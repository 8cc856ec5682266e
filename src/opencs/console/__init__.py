"""The web console (/console): server-rendered pages (Jinja2 + htmx) over the same API calls, made
in-process for the signed-in user, so every page shows and does what that user's RAM rights allow."""
