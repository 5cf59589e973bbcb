"""Bad model YAML: a clear error naming file, model and field, and nothing loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect

from timber_tasks import ModelConfigError, TimberError, get_model, initialize_timber
from timber_tasks.models.registry import ModelRegistry

GOOD = """
version: "1"
models:
  - name: Good
    table_name: goods
    columns:
      - {name: id, type: Integer, primary_key: true}
"""

CASES = {
    "malformed yaml": ("models: [unclosed", ["bad.yaml", "malformed YAML"]),
    "not a mapping": ("- just a list", ["bad.yaml", "must be a mapping"]),
    "missing version": ("models: []", ["bad.yaml", "version", "Field required"]),
    "unknown top key": ('version: "1"\nmodelz: []', ["bad.yaml", "modelz", "Extra inputs"]),
    "unknown column key": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: '
        '[{name: id, type: Integer, primary_key: true, nulable: false}]}]',
        ["bad.yaml", "'M'", "'id'", "nulable"]),
    "missing column type": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, primary_key: true}]}]',
        ["bad.yaml", "'M'", "'id'", "type"]),
    "unknown type": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integr, primary_key: true}]}]',
        ["bad.yaml", "'M'", "'id'", "unknown type 'Integr'"]),
    "type without parentheses": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: "Numeric 10, 2", '
        'primary_key: true}]}]',
        ["bad.yaml", "'M'", "'id'", "Numeric 10, 2"]),
    "fk to missing table": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true},'
        ' {name: u, type: Integer, foreign_key: users.id}]}]',
        ["bad.yaml", "'M'", "'u'", "no model has table 'users'"]),
    "fk to missing column": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true},'
        ' {name: g, type: Integer, foreign_key: goods.uid}]}]',
        ["bad.yaml", "'M'", "'g'", "table 'goods' has no column 'uid'"]),
    "duplicate model": (GOOD.replace("goods", "goods2"), ["bad.yaml", "'Good'", "also defined in"]),
    "duplicate table": (GOOD.replace("Good", "Other"), ["bad.yaml", "'Other'", "table 'goods' is also used"]),
    "unsafe table name": (
        'version: "1"\nmodels: [{name: M, table_name: "m; DROP TABLE x", columns: '
        '[{name: id, type: Integer, primary_key: true}]}]',
        ["bad.yaml", "'M'", "not a safe SQL identifier"]),
    "unsafe column name": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: "id-x", type: Integer, '
        'primary_key: true}]}]',
        ["bad.yaml", "'M'", "not a safe SQL identifier"]),
    "reserved column name": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true},'
        ' {name: metadata, type: JSON}]}]',
        ["bad.yaml", "'M'", "'metadata'", "reserved"]),
    "check names unknown column": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true,'
        ' check: "idd > 0"}]}]',
        ["bad.yaml", "'M'", "'id'", "'idd', which is not a column"]),
    "check smuggles sql": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true,'
        ' check: "id > 0); DROP TABLE goods; --"}]}]',
        ["bad.yaml", "'M'", "'id'", "in expression"]),
    "no primary key": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: x, type: Integer}]}]',
        ["bad.yaml", "'M'", "no primary key"]),
    "relationship to unknown model": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true}],'
        ' relationships: [{name: owner, model: Ownr}]}]',
        ["bad.yaml", "'M'", "'owner'", "unknown model 'Ownr'"]),
    "many-to-many without secondary": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true}],'
        ' relationships: [{name: goods, model: Good, type: many-to-many}]}]',
        ["bad.yaml", "'M'", "'goods'", "needs 'secondary'"]),
    "index on unknown column": (
        'version: "1"\nmodels: [{name: M, table_name: m, columns: [{name: id, type: Integer, primary_key: true}],'
        ' indexes: [{columns: [nope]}]}]',
        ["bad.yaml", "'M'", "unknown column 'nope'"]),
    "unknown mixin": (
        'version: "1"\nmodels: [{name: M, table_name: m, mixins: [Audit], columns: '
        '[{name: id, type: Integer, primary_key: true}]}]',
        ["bad.yaml", "'M'", "unknown mixin 'Audit'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_files_fail_with_file_model_and_field_named(
    case: str, tmp_path: Path, write_models: Callable[..., Path]
) -> None:
    body, expected = CASES[case]
    folder = write_models({"good.yaml": GOOD, "bad.yaml": body})
    url = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(ModelConfigError) as info:
        initialize_timber(model_config_dirs=[folder], database_url=url)
    for fragment in expected:
        assert fragment in str(info.value), (fragment, str(info.value))
    # Nothing from the set was registered, and no table was created.
    with pytest.raises(TimberError):  # never initialized: no registry at all
        get_model("Good")
    assert not (tmp_path / "t.db").exists() or inspect_tables(url) == set()


def inspect_tables(url: str) -> set[str]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_every_error_of_a_set_is_reported_at_once(write_models: Callable[..., Path]) -> None:
    folder = write_models({
        "a.yaml": 'version: "1"\nmodels: [{name: A, table_name: a, columns: [{name: id, type: Intger, '
                  'primary_key: true}]}]',
        "b.yaml": 'version: "1"\nmodels: [{name: B, table_name: b, columns: [{name: id, type: Integer, '
                  'primary_key: true}, {name: a, type: Integer, foreign_key: a.nope}]}]',
    })
    with pytest.raises(ModelConfigError) as info:
        ModelRegistry.from_dirs([folder], app_name="t")
    assert len(info.value.errors) == 2  # type: ignore[attr-defined]


def test_a_failed_reload_keeps_the_previous_registry(tmp_path: Path, write_models: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    initialize_timber(model_config_dirs=[write_models({"good.yaml": GOOD})], database_url=url)
    with pytest.raises(ModelConfigError):
        initialize_timber(model_config_dirs=[write_models({"good.yaml": GOOD, "bad.yaml": "x: ["})],
                          database_url=url)
    assert get_model("Good").__tablename__ == "goods"


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="no_such_dir"):
        initialize_timber(model_config_dirs=[tmp_path / "no_such_dir"], database_url=f"sqlite:///{tmp_path}/t.db")


def test_a_model_file_and_a_beat_file_that_are_not_utf8_are_named(tmp_path: Path,
                                                                    write_models: Callable[..., Path]) -> None:
    from timber_tasks.beat import load_schedule
    from timber_tasks.errors import ConfigError

    folder = write_models({"good.yaml": GOOD})
    (folder / "latin.yaml").write_bytes(b"version: '1'\nmodels: []\n# caf\xe9\n")
    with pytest.raises(ModelConfigError, match=r"latin\.yaml.*not UTF-8 text"):
        ModelRegistry.from_dirs([folder], app_name="t")
    beat = tmp_path / "beat.yaml"
    beat.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(ConfigError, match=r"beat\.yaml: not UTF-8 text"):
        load_schedule(beat, object())  # type: ignore[arg-type]
