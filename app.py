"""DID Explorer: see what a language model learned from DPO, through the Differential Information
Distribution (arXiv:2505.23761).

    streamlit run app.py            # workspace: $DID_WORKSPACE or ./workspace

This file only routes. Each page is one thin file under pages/; caching lives in did_ui/data.py.
"""

from __future__ import annotations

import streamlit as st

from did_ui import data, page_list, pausing, picker, widgets

st.set_page_config(page_title="DID Explorer", page_icon=":material/insights:", layout="wide")
data.fast_first_touch()  # before any table is read (see its docstring)
data.warm_up(data.workspace_root())
st.session_state[widgets.ROUTED] = True  # see widgets.ensure_router

# Runs is served at "/" (the default page) and at /runs. Streamlit 1.67 still reserves a default
# page's own path and answers it with a "Page not found" dialog, so the default's path is an unused
# one (`home`); /runs (its address before it became the default, the one a user would guess, and
# where the menu links: a link's href is its page's path) runs the same file, in place, keeping
# its query. It is listed first so that "pages/runs.py" in st.page_link/st.switch_page means it.
info = page_list.PAGES
pages = {key: st.Page(p.path, title=p.title, icon=p.icon, url_path=key) for key, p in info.items()}
runs = pages["runs"]
home = st.Page(info["runs"].path, title=info["runs"].title, icon=info["runs"].icon, default=True, url_path="home")
explore = [pages[k] for k, p in info.items() if p.section == "Explore"]
tools = [pages[k] for k, p in info.items() if p.section == "Tools"]

# st.navigation's own menu drops the query on every click; the menu is picker.page_menu's links.
page = st.navigation([*explore, home, *tools], position="hidden")
menu = st.sidebar.container(key="did_menu")
st.sidebar.caption("DID Explorer · [paper](https://arxiv.org/abs/2505.23761)")
first_run = "_did_drawn" not in st.session_state  # a page load: the browser has more to draw after the script
st.session_state["_did_drawn"] = True
with pausing.HOLDS.foreground(data.workspace_root(), pausing.NEW_PAGE_SETTLE_S if first_run else 0.0):
    try:
        with widgets.page_frame():  # a page that ends early (widgets.end_page) still gets the menu
            page.run()  # background jobs pause while this page is computed and drawn
    finally:  # the menu carries the selection the page has just shown
        shown = [home if page is home and p is runs else p for p in explore]  # at /, Runs is lit: "/"'s own link
        picker.page_menu(menu, {"Explore": shown, "Tools": tools}, page.url_path)
