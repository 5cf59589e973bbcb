"""Loading 200 models from YAML, beside parsing the same YAML and hand-declaring the same classes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import DeclarativeBase

from bench.common import best_of, report
from timber_tasks.models.registry import ModelRegistry

N_MODELS = 200
MODELS_PER_FILE = 10


def model_yaml(i: int) -> str:
    parent = f"\n      - {{name: parent_id, type: String(36), foreign_key: m{i - 1}.id, index: true}}" if i else ""
    return f"""
  - name: Model{i}
    table_name: m{i}
    caching: {{enabled: true, ttl_seconds: 60}}
    columns:
      - {{name: id, type: String(36), primary_key: true, default: uuid4}}{parent}
      - {{name: name, type: String(100), nullable: false, validators: [{{type: length, min: 1, max: 100}}]}}
      - {{name: amount, type: "Numeric(12, 2)", check: "amount >= 0"}}
      - {{name: payload, type: JSON}}
      - {{name: created_at, type: DateTime, default: utcnow}}
    indexes:
      - {{name: idx_m{i}_name_created, columns: [name, created_at]}}
"""


def write_files(folder: Path) -> list[Path]:
    paths = []
    for f in range(N_MODELS // MODELS_PER_FILE):
        body = 'version: "1"\nmodels:' + "".join(
            model_yaml(i) for i in range(f * MODELS_PER_FILE, (f + 1) * MODELS_PER_FILE))
        path = folder / f"models_{f:02d}.yaml"
        path.write_text(body)
        paths.append(path)
    return paths


def hand_declared() -> None:
    class Base(DeclarativeBase):
        pass

    for i in range(N_MODELS):
        attrs = {
            "__tablename__": f"m{i}",
            "id": Column(String(36), primary_key=True),
            "name": Column(String(100), nullable=False),
            "amount": Column(Numeric(12, 2)),
            "payload": Column(JSON),
            "created_at": Column(DateTime),
            "__table_args__": (Index(f"idx_m{i}_name_created", "name", "created_at"),),
        }
        if i:
            attrs["parent_id"] = Column(String(36), ForeignKey(f"m{i - 1}.id"), index=True)
        type(f"Model{i}", (Base,), attrs)
    Base.registry.configure()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp))
        t_yaml = best_of(lambda: [yaml.safe_load(p.read_text()) for p in paths])
        t_cyaml = best_of(lambda: [yaml.load(p.read_text(), Loader=yaml.CSafeLoader) for p in paths])
        t_hand = best_of(hand_declared)
        t_ours = best_of(lambda: ModelRegistry.from_files(paths, app_name="bench", dialect="postgresql"))
    report(f"load {N_MODELS} models", [
        ("yaml.safe_load of the files only", N_MODELS / t_yaml, "models/s"),
        ("yaml.load(CSafeLoader) of the files only", N_MODELS / t_cyaml, "models/s"),
        ("hand-declared SQLAlchemy classes (no YAML)", N_MODELS / t_hand, "models/s"),
        ("ModelRegistry.from_files (YAML -> classes)", N_MODELS / t_ours, "models/s"),
    ], baseline="hand-declared SQLAlchemy classes (no YAML)")
    print(f"  ModelRegistry.from_files: {t_ours * 1000:.0f} ms for {N_MODELS} models; "
          f"yaml.safe_load alone {t_yaml * 1000:.0f} ms; hand-declared classes {t_hand * 1000:.0f} ms")


if __name__ == "__main__":
    main()
