"""The Advise page under Streamlit's AppTest: a real small advice from the form, then the same from its link.

One real measurement (one format, small counts, a short time budget) is shared by the
tests of this module: the form's run, and the address it leaves, opened again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import advise  # noqa: E402
from storage.bench import ResultsDB  # noqa: E402

ADVISE = str(ROOT / "pages" / "4_Advise.py")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("advise")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGE_STORAGE_LAB_DB", str(folder / "results.sqlite"))
        patch.setenv("IMAGE_STORAGE_LAB_RUNS", str(folder / "runs"))
        patch.setenv("IMAGE_STORAGE_LAB_ROOTS", str(folder))
        patch.delenv("IMAGE_STORAGE_LAB_READ_ONLY", raising=False)
        yield folder


@pytest.fixture(scope="module")
def advised(folders):
    """The form filled in and Advise pressed: a real sampling run of npy and webdataset."""
    at = AppTest.from_file(ADVISE, default_timeout=120).run()
    assert not at.exception
    at.number_input[0].set_value(60)  # images in the full dataset: one count (60) is measured, to keep it short
    at.radio[0].set_value("random")
    at.text_input[1].set_value("1GB")
    at.number_input[2].set_value(5)
    at.multiselect[0].set_value(["npy", "webdataset"])  # two formats, to keep the run short
    at.button[0].click().run()
    return at


def test_advise_page_measures_and_recommends_with_the_reasoning_table(advised, folders):
    at = advised
    assert not at.exception, [e.value for e in at.exception]
    assert at.success, [e.value for e in at.error]
    assert "webdataset" in at.success[0].value
    table = at.dataframe[0].value
    assert {"format", "verdict", "bytes", "random read", "why not"} <= set(table.columns)
    verdicts = dict(zip(table["format"], table["verdict"], strict=True))
    assert list(verdicts.values()).count("recommended") == 1
    assert "no random access" in table.set_index("format").loc["webdataset", "why not"]
    with ResultsDB(folders / "results.sqlite") as db:
        stored = sorted(run.id for run in db.list_runs())
    assert at.query_params["runs"].split(",") == stored and at.query_params["access"] == "random"


def test_the_advice_link_shows_the_same_answer_from_stored_runs_without_measuring(advised, folders):
    params = {key: advised.query_params[key] for key in advised.query_params}
    again = AppTest.from_file(ADVISE, default_timeout=60)
    for key, value in params.items():
        again.query_params[key] = value
    again.run()
    assert not again.exception
    assert again.success[0].value == advised.success[0].value
    with ResultsDB(folders / "results.sqlite") as db:
        assert sorted(run.id for run in db.list_runs()) == params["runs"].split(",")  # nothing new measured
    question, run_ids, notes = advise.question_from_params({k: [v] for k, v in params.items()})
    assert notes == [] and run_ids == params["runs"].split(",") and question.access == "random"


def test_a_link_that_breaks_the_question_is_named_not_crashed(folders):
    at = AppTest.from_file(ADVISE, default_timeout=60)
    at.query_params["access"] = "diagonal"
    at.query_params["disk_budget"] = "plenty"
    at.run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "diagonal" in warnings and "plenty" in warnings


def test_the_share_picture_and_json_hold_the_recommendation(advised, folders):
    params = {key: advised.query_params[key] for key in advised.query_params}
    question, run_ids, _ = advise.question_from_params(params)
    from storage.advice import advise as advise_question

    with ResultsDB(folders / "results.sqlite") as db:
        advice = advise_question(question, db, str(folders / "runs"), run_ids=run_ids)
    data = json.loads(advise.advice_json(advice))
    assert data["recommended"]["backend"] == advice.recommended.backend
    assert {row["backend"] for row in data["formats"]} >= {"npy", "webdataset"}
    picture = advise.advice_png(advice)
    assert picture.startswith(b"\x89PNG") and len(picture) > 5_000
