"""Shared base for every config section: strict, described, bounded.

`extra="forbid"` turns a misspelled key into an error that names it; `validate_default`
makes sure the defaults themselves obey the bounds.
"""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base class of every config section."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)
