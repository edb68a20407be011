"""The store's words that commands show before any database is opened (no SQLAlchemy import)."""

#: Who may do what: technicians count and review, supervisors also sign off and reopen, admins manage users.
ROLES = ("technician", "supervisor", "admin")
#: Export formats and the file suffixes each takes.
EXPORTS = {"csv": (".csv",), "fhir": (".json",)}
