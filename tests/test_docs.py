"""The generated documentation is current."""

from importlib.machinery import SourceFileLoader
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_app_schema_page_matches_the_applets():
    generator = SourceFileLoader("gen_apps_doc", str(ROOT / "scripts" / "gen-apps-doc")).load_module()
    assert (ROOT / "docs" / "apps.md").read_text() == generator.render(), (
        "docs/apps.md is out of date: run scripts/gen-apps-doc"
    )
