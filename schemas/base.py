"""Shared base for every config section: strict, described, bounded.

`extra="forbid"` turns a misspelled key into an error that names it; `validate_default`
makes sure the defaults themselves obey the bounds.
"""
from pydantic import BaseModel, ConfigDict

# json_schema_extra of options added after runs already existed: at its default such an
# option stays out of the phase cache keys (tasks/cache.py), so an older run resumes
# with every finished phase still a cache hit.
NEW_OPTION = {"cache_key": "when_set"}


class Section(BaseModel):
    """Base class of every config section."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


def unset_new_options(model: BaseModel) -> dict:
    """Nested `exclude` spec of the NEW_OPTION fields of `model` that hold their default."""
    exclude = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.json_schema_extra == NEW_OPTION and value == field.get_default(call_default_factory=True):
            exclude[name] = True
        elif isinstance(value, BaseModel) and (inner := unset_new_options(value)):
            exclude[name] = inner
    return exclude
