"""The HTTP application: routes and their auth (:mod:`.app`), the JSON API
(:mod:`.api`, :mod:`.views`) and the landing page (:mod:`.landing`). It talks to the
engine only; ``viber_exporter.server`` serves it."""
