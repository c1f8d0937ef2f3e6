"""The web page served at ``/`` (static HTML/CSS/JS in ``static/``; talks only to the REST API)."""
