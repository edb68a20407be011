"""The lab's settings kept in the store: how many white cells a differential counts (100 or 200).

Anyone signed in reads them; only an admin changes them, and every change is audited (before and after).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bloodcell.errors import ConfigError
from bloodcell.store.audit import record
from bloodcell.store.models import LabSetting, utcnow
from bloodcell.store.users import Person

WBC_TARGET = "wbc_target"
#: White cells a differential may be read from (CLSI H20: 100, or 200 for a more precise count).
WBC_TARGETS = (100, 200)
DEFAULTS = {WBC_TARGET: 100}


def lab_settings(session: Session) -> dict[str, int]:
    """Every setting, the lab's value or the default."""
    kept = {row.key: row.value for row in session.scalars(select(LabSetting).where(LabSetting.key.in_(list(DEFAULTS))))}
    return {key: kept.get(key, default) for key, default in DEFAULTS.items()}


def set_wbc_target(session: Session, target: int, by: Person) -> dict[str, int]:
    """An admin sets how many white cells each sample's differential counts; audited."""
    by.require("settings")
    if target not in WBC_TARGETS:
        raise ConfigError(f"a differential counts {' or '.join(map(str, WBC_TARGETS))} white cells, not {target}")
    before = lab_settings(session)[WBC_TARGET]
    row = session.get(LabSetting, WBC_TARGET)
    if row is None:
        session.add(LabSetting(key=WBC_TARGET, value=target, updated_by=by.name, updated_at=utcnow()))
    else:
        row.value, row.updated_by, row.updated_at = target, by.name, utcnow()
    record(session, by.name, "setting", f"setting:{WBC_TARGET}", {WBC_TARGET: before}, {WBC_TARGET: target})
    return lab_settings(session)
