"""Advise page: which format, for the whole dataset, from measurements on a sample of it.

The form asks the question in the user's terms (the data, its full size, how it will be
read, lossless, a disk budget, other tools); **Advise** measures what earlier runs have not
(within the time budget) and puts the answer's address in the page's: ``?count=...&runs=...``
shows the same advice again from the stored runs, measuring nothing. In read-only mode
(``IMAGE_STORAGE_LAB_READ_ONLY``) only such links are shown.
"""

import streamlit as st

from dashboard import access, advise, config, resources, views
from dashboard.text import plain
from storage import backends
from storage.advice import ACCESS_PATTERNS, InvalidQuestionError, Question, parse_size
from storage.advice import advise as advise_question
from storage.advice.question import ACCESS_LABELS
from storage.errors import StorageError

views.setup_page("Advise")
st.title("Which format should I use?")
st.caption(
    "Measured on a sample of your data, on this machine, and projected to your whole dataset, "
    "with the range the repeats allow."
)

params = {key: st.query_params.get_all(key) for key in st.query_params}
linked, run_ids, notes = advise.question_from_params(params)
for note in notes:
    st.warning(f"The link could not be followed entirely: {plain(note)}.")

sources = dict(advise.SOURCES)
if linked.source not in sources:
    sources[linked.source] = linked.source
with st.form("question"):
    source = st.selectbox("Data (read as a sample)", list(sources), index=list(sources).index(linked.source),
                          format_func=sources.get)  # fmt: skip
    folder = st.text_input("…or an image folder", value="", help=f"under the data roots: {access.describe_roots()}")
    count = st.number_input("Images in the full dataset", min_value=1, value=linked.count, step=1000)
    how = st.radio("How it will be read", ACCESS_PATTERNS, index=ACCESS_PATTERNS.index(linked.access),
                   format_func=ACCESS_LABELS.get)  # fmt: skip
    workers = st.number_input("DataLoader workers", min_value=0, value=linked.workers, step=1)
    lossless = st.checkbox("Must be lossless", value=linked.lossless)
    others = st.checkbox("Other tools must read it without this library", value=linked.readable_by_others)
    budget = st.text_input("Disk budget (e.g. 200GB; empty: the free space)",
                           value="" if linked.disk_budget_bytes is None else str(linked.disk_budget_bytes))  # fmt: skip
    formats = st.multiselect("Formats to weigh (none chosen: the usual candidates for this data)", backends(),
                             default=[name for name in linked.backends if name in backends()])  # fmt: skip
    seconds = st.number_input("Time for measuring (s)", min_value=5, value=int(linked.time_budget_s), step=10)
    asked = st.form_submit_button("Advise", type="primary", disabled=access.read_only())
if access.read_only():
    st.info(plain(access.READ_ONLY_NOTE))


def question_from_form() -> Question:
    chosen = folder.strip() or source
    if folder.strip():
        access.allowed_path(chosen)  # refused the same way whether it exists or not
    disk = parse_size(budget) if budget.strip() else None
    return Question(source=chosen, count=int(count), access=how, workers=int(workers), lossless=lossless,
                    readable_by_others=others, disk_budget_bytes=disk, time_budget_s=float(seconds),
                    backends=tuple(formats))  # fmt: skip


advice = None
try:
    db = resources.results_db()
    if asked and not access.read_only():
        question = question_from_form()
        with st.status("Measuring on a sample…", expanded=True) as status:
            advice = advise_question(
                question, db, str(config.runs_dir()), on_progress=lambda line: st.write(plain(line))
            )
            status.update(label="Measured", state="complete", expanded=False)
        views.sync_query_params(advise.params_of(question, advice.runs))
    elif run_ids:
        advice = advise_question(linked, db, str(config.runs_dir()), run_ids=run_ids)
except (InvalidQuestionError, StorageError) as error:
    views.show_error(error, what="No advice")

if advice is not None:
    st.subheader("Recommendation")
    if advice.recommended is not None:
        st.success(plain(advice.text))
    else:
        st.error(plain(advice.text))
    st.caption(plain(advise.question_words(advice.question)))
    st.dataframe(advise.reasoning_frame(advice), hide_index=True, width="stretch")
    for note in advice.notes:
        st.caption(plain(note))
    views.download_buttons(
        [
            ("JSON", advise.advice_json(advice), "advice.json", "application/json"),
            ("Share", lambda: advise.advice_png(advice), "advice.png", "image/png"),
        ],
        key_prefix="advice",
    )
    st.caption("This page's address shows the same advice again, from the same stored runs.")
