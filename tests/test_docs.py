"""The generated documentation is current."""

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_app_schema_page_matches_the_applets():
    loader = SourceFileLoader("gen_apps_doc", str(ROOT / "scripts" / "gen-apps-doc"))
    generator = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(loader.name, loader)
    )
    loader.exec_module(generator)
    assert (ROOT / "docs" / "apps.md").read_text() == generator.render(), (
        "docs/apps.md is out of date: run scripts/gen-apps-doc"
    )
