"""The Streamlit dashboard's helpers: everything the pages need that is not a page.

The pages (``app.py`` and ``pages/*.py``) stay thin: they lay out controls and call these
modules, which in turn call the storage library and the benchmark engine.

* :mod:`dashboard.config`: where the results database and the run folders are.
* :mod:`dashboard.access`: the folders the pages may read (the data roots) and read-only mode.
* :mod:`dashboard.text`: names from files and links shown as text in Markdown.
* :mod:`dashboard.state`: page controls <-> URL query parameters.
* :mod:`dashboard.runner`: benchmark runs started in their own process and followed by id
  through the results database.
* :mod:`dashboard.share`: the "Share" picture of a whole result.
* :mod:`dashboard.worker`: the process a run from the dashboard runs in.
* :mod:`dashboard.charts`: measurements as pandas frames and Altair charts, and their export.
* :mod:`dashboard.previews`: images enlarged so that 32x32 pixels can be seen.
* :mod:`dashboard.image_folders`: an image folder's bad files named, its size against the counts.
* :mod:`dashboard.resources`: cached database handles, data sources and stores.
* :mod:`dashboard.views`: Streamlit blocks shared by several pages.

Only :mod:`dashboard.resources` and :mod:`dashboard.views` import Streamlit; the others are
plain Python and tested without it.
"""
