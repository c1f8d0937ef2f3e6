"""The actions the audit trail records (``pneumo.store.audit``), importable without the database layer: the
CLI lists them as ``pneumo audit --action`` choices at start-up, and SQLAlchemy costs ~0.2 s to import."""

ACTIONS: tuple[str, ...] = ("analyse", "view", "review", "export", "user_add", "user_disable")
