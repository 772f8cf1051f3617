"""Score: a dataset with a reference and checkpoints (or a TRL run folder), in the background.
The job is `python -m did_core score ...` in a subprocess; it survives reruns and restarts."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path

import streamlit as st

from did_ui import data, job_argv, job_panel, jobs, score_form, standby, widgets

MAX_UPLOAD_MB = int(os.environ.get("DID_MAX_UPLOAD_MB") or 200)  # = server.maxUploadSize in .streamlit/config.toml

widgets.start_page("score")
root = data.workspace_root()
standby.ensure(root)  # a warm process for the job this page may start (did_ui/standby.py)
st.caption(f"Results go to the workspace `{root}`. Scoring resumes where it stopped; finished work is never recomputed.")

with st.form("score_form"):
    st.markdown("**Dataset**: TRL standard or conversational, HH-RLHF, UltraFeedback, RewardBench "
                "(JSONL, JSON, CSV, Parquet, a `save_to_disk` folder).")
    upload = st.file_uploader("Upload a file", type=["jsonl", "json", "csv", "parquet", "gz"],
                              max_upload_size=MAX_UPLOAD_MB)
    data_path = st.text_input("…or a path on this machine", placeholder="/data/prefs.jsonl")
    slots = {"data": st.empty()}  # each field's error is drawn right under it (score_form.show_errors)
    reference = st.text_input("Reference model (SFT)", placeholder="path, hub id, PEFT adapter dir or .gguf")
    slots["reference"] = st.empty()
    c1, c2 = st.columns(2)
    run_dir = c1.text_input("TRL output folder (checkpoint-* inside)", placeholder="/runs/dpo-out")
    slots["run_dir"] = c1.empty()
    policies = c2.text_area("…or checkpoints, one per line", height=80)
    slots["policies"] = c2.empty()
    c3, c4, c5, c6 = st.columns(4)
    name = c3.text_input("Run name", placeholder="from the run folder and dataset",
                         help="A run of this name that exists is never replaced unless you tick Replace.")
    replace = c3.checkbox("Replace a run of this name")
    slots["name"] = c3.empty()
    numerics = c4.selectbox("Numerics", ["auto", "exact", "trainer", "both"],
                            help="exact: float32 forward, float64 sums. trainer: the forward as the trainer ran "
                                 "it (its autocast and eval batches): reproduces its logged metrics. auto: both "
                                 "when the trainer ran in bf16/fp16.")
    limit = c5.number_input("Limit pairs (0 = all)", min_value=0, value=0, step=100)
    dtype = c6.selectbox("dtype (exact numerics)", ["auto", "float32", "bfloat16", "float16"])
    device = c5.selectbox("device", ["auto", "cpu", "cuda"])
    token_level = c6.checkbox("Token-level DID entropy", value=True)
    with st.expander("The run's settings — blank: the trainer's, from the run folder", expanded=False):
        raw_settings = score_form.settings_inputs()
    slots["settings"] = st.empty()  # under the expander: visible while it is closed
    submitted = st.form_submit_button("Start scoring", type="primary")

too_big = submitted and upload is not None and upload.size > MAX_UPLOAD_MB * 2**20
if too_big:  # the server's maxUploadSize is the first guard; this one holds for any server config
    st.error(f"The upload is {upload.size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit: "
             "give its path on this machine instead.")
if submitted and not too_big:
    source = data_path.strip()
    if upload is not None:
        content = upload.getvalue()
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(upload.name).name)[-80:]
        target = Path(root) / "uploads" / f"{hashlib.sha256(content).hexdigest()[:12]}-{safe}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        source = str(target)
    policy_list = [p.strip() for p in policies.splitlines() if p.strip()]
    overrides, errors = score_form.parse_overrides(raw_settings)
    checks, resolved = data.score_preflight(source, reference.strip(), policy_list, run_dir.strip() or None,
                                            overrides)
    errors |= checks
    run_name = name.strip() or data.default_run_name(reference.strip(), policy_list, run_dir.strip() or None, source)
    existing = data.run_names(root, data.version(root))
    if run_name in existing and not replace:
        errors["name"] = (f"error: a run named {run_name!r} exists; give another name, or tick Replace "
                          "(its results stay until the new ones are complete)")
    score_form.show_errors(errors, slots)
    if not errors:
        argv = job_argv.score_argv(source, reference.strip(), workspace=root, policies=policy_list or None,
                                   run_dir=run_dir.strip() or None, overrides=overrides, numerics=numerics,
                                   limit=int(limit) or None, dtype=dtype, device=device, token_level=token_level,
                                   name=run_name)
        job_id = jobs.start(root, argv, kind="score")
        st.success(f"Started job `{job_id}`: run `{run_name}`.")
        if resolved is not None:
            for note in resolved.notes():
                st.warning(f"Override: {note}")
            widgets.table(score_form.settings_table(resolved))

all_jobs = jobs.list_jobs(root)
st.subheader("Jobs")
if not all_jobs:
    st.caption("No jobs yet.")
for i, job in enumerate(all_jobs[:10]):
    with st.container(border=True):
        if job.status == "running" or i == 0:
            job_panel.job_panel(root, job.id)
        else:
            st.markdown(f"`{job.id}` · {job.kind} · **{job.status}**")
            if job.error:
                st.text(job.error)
        with st.expander("Command"):
            st.code(shlex.join(job.argv), language="bash")
