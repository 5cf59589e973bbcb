"""Indexes, relationships and the dependency graph, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from timber_tasks import ModelConfigError, ValidationError, initialize_timber

INDEXED = """
version: "1"
models:
  - name: Job
    table_name: jobs
    columns:
      - {name: id, type: Integer, primary_key: true}
      - {name: status, type: String(20)}
      - {name: kind, type: String(20)}
      - {name: owner, type: String(20)}
      - {name: created_at, type: DateTime}
    indexes:
      - {name: idx_status_kind, columns: [status, kind]}
      - {columns: [owner, created_at]}
      - {name: uq_owner_pending, columns: [owner], unique: true, where: "status = 'pending'"}
"""


def _index_sql(timber, name: str) -> str:  # type: ignore[no-untyped-def]
    query = ("SELECT indexdef FROM pg_indexes WHERE indexname = :n" if timber.db.dialect == "postgresql"
             else "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n")
    with timber.db.engine.connect() as conn:
        return str(conn.execute(text(query), {"n": name}).scalar())


def test_composite_named_unique_and_partial_indexes_exist(
    database_url: str, write_models: Callable[..., Path]
) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": INDEXED})],
                               database_url=database_url)
    indexes = {ix["name"]: ix for ix in inspect(timber.db.engine).get_indexes("jobs")}
    assert indexes["idx_status_kind"]["column_names"] == ["status", "kind"]
    assert indexes["ix_jobs_owner_created_at"]["column_names"] == ["owner", "created_at"]
    assert indexes["uq_owner_pending"]["unique"]
    assert "WHERE" in _index_sql(timber, "uq_owner_pending").upper()


def test_a_partial_unique_index_only_binds_matching_rows(
    database_url: str, write_models: Callable[..., Path]
) -> None:
    timber = initialize_timber(model_config_dirs=[write_models({"m.yaml": INDEXED})],
                               database_url=database_url)
    Job = timber.get_model("Job")
    with timber.db.session_scope() as s:
        s.add_all([Job(id=1, owner="a", status="done"), Job(id=2, owner="a", status="done"),
                   Job(id=3, owner="a", status="pending")])
    with pytest.raises(ValidationError) as info, timber.db.session_scope() as s:  # the database refused it
        s.add(Job(id=4, owner="a", status="pending"))
    assert (info.value.model, info.value.field) == ("Job", "owner")


# Relationship models are split over files named so that the referring file sorts first.
RELATED = {
    "a_posts.yaml": """
        version: "1"
        depends: [z_authors.yaml]
        models:
          - name: Post
            table_name: posts
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: author_id, type: Integer, foreign_key: authors.id}
              - {name: title, type: String(100)}
            relationships:
              - {name: author, model: Author, type: many-to-one, back_populates: posts}
              - {name: tags, model: Tag, type: many-to-many, secondary: post_tags, back_populates: posts}
          - name: PostTag
            table_name: post_tags
            columns:
              - {name: post_id, type: Integer, foreign_key: posts.id, primary_key: true}
              - {name: tag_id, type: Integer, foreign_key: tags.id, primary_key: true}
    """,
    "z_authors.yaml": """
        version: "1"
        models:
          - name: Author
            table_name: authors
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: name, type: String(100)}
            relationships:
              - {name: posts, model: Post, type: one-to-many, back_populates: author, lazy: selectin}
          - name: Tag
            table_name: tags
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: label, type: String(30)}
    """,
}


def test_relationships_link_models_across_files_in_any_order(
    database_url: str, write_models: Callable[..., Path]
) -> None:
    timber = initialize_timber(model_config_dirs=[write_models(RELATED)], database_url=database_url)
    Author, Post, Tag = (timber.get_model(n) for n in ("Author", "Post", "Tag"))
    with timber.db.session_scope() as s:
        growth, tech = Tag(id=1, label="growth"), Tag(id=2, label="tech")
        s.add(Author(id=1, name="Ada", posts=[Post(id=1, title="p1", tags=[growth, tech]),
                                              Post(id=2, title="p2", tags=[tech])]))
    with timber.db.session_scope() as s:
        author = s.get(Author, 1)
        assert sorted(p.title for p in author.posts) == ["p1", "p2"]
        assert s.get(Post, 1).author is author
        # The inverse side of the many-to-many was not declared on Tag: it was added.
        assert sorted(p.title for p in s.get(Tag, 2).posts) == ["p1", "p2"]
    assert Author.posts.property.lazy == "selectin"


def test_foreign_key_targets_are_ordered_first(write_models: Callable[..., Path], tmp_path: Path) -> None:
    timber = initialize_timber(model_config_dirs=[write_models(RELATED)],
                               database_url=f"sqlite:///{tmp_path}/t.db")
    order = [m.name for m in timber.registry.specs()]
    assert order.index("Author") < order.index("Post") < order.index("PostTag")
    assert order.index("Tag") < order.index("PostTag")


def test_a_foreign_key_cycle_is_an_error_naming_it(write_models: Callable[..., Path], tmp_path: Path) -> None:
    folder = write_models({"c.yaml": """
        version: "1"
        models:
          - name: A
            table_name: a
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: b_id, type: Integer, foreign_key: b.id}
          - name: B
            table_name: b
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: a_id, type: Integer, foreign_key: a.id}
    """})
    with pytest.raises(ModelConfigError, match=r"dependency cycle.*(A -> B -> A|B -> A -> B)"):
        initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")


def test_a_self_reference_is_not_a_cycle(write_models: Callable[..., Path], tmp_path: Path) -> None:
    folder = write_models({"t.yaml": """
        version: "1"
        models:
          - name: Node
            table_name: nodes
            columns:
              - {name: id, type: Integer, primary_key: true}
              - {name: parent_id, type: Integer, foreign_key: nodes.id}
    """})
    timber = initialize_timber(model_config_dirs=[folder], database_url=f"sqlite:///{tmp_path}/t.db")
    assert "Node" in timber.registry


def test_file_depends_must_name_a_loaded_file_and_not_loop(
    write_models: Callable[..., Path], tmp_path: Path
) -> None:
    model = 'models: [{name: M%s, table_name: t%s, columns: [{name: id, type: Integer, primary_key: true}]}]'
    missing = write_models({"a.yaml": 'version: "1"\ndepends: [nowhere.yaml]\n' + model % (1, 1)})
    with pytest.raises(ModelConfigError, match=r"a.yaml.*depends on 'nowhere.yaml'"):
        initialize_timber(model_config_dirs=[missing], database_url=f"sqlite:///{tmp_path}/t.db")
    loop = write_models({"a.yaml": 'version: "1"\ndepends: [b.yaml]\n' + model % (1, 1),
                         "b.yaml": 'version: "1"\ndepends: [a.yaml]\n' + model % (2, 2)})
    with pytest.raises(ModelConfigError, match="file dependency cycle"):
        initialize_timber(model_config_dirs=[loop], database_url=f"sqlite:///{tmp_path}/t.db")
