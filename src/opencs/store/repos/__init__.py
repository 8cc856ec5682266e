"""Repositories: the only code above the models that speaks SQL.

One module per concept of the spec. Services call these with a unit of work (`Database.session()`)
when several writes must commit together, and never import SQLAlchemy themselves.
"""
