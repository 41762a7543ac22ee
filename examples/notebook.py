# %% [markdown]
# # rsauth in a notebook
#
# A notebook in the percent format: Jupyter (with jupytext), VS Code and PyCharm
# open each `# %%` block as a cell, and `python examples/notebook.py` runs it
# top to bottom. Nobody pastes a password: `rsauth.connect` logs in with your
# AWS identity, and a login that expires mid-session is replaced on the next
# call.
#
# With `RSAUTH_WORKGROUP` set the notebook uses your environment as it is (real
# AWS, or a sandbox you started); otherwise it starts a local sandbox.

# %%
from __future__ import annotations

import os
import warnings

import awswrangler
import pandas

import rsauth
from rsauth.sandbox import Sandbox

sandbox = None
if not os.environ.get("RSAUTH_WORKGROUP"):
    sandbox = Sandbox().start()  # stops at sandbox.stop(), or when the kernel exits
    os.environ.update(sandbox.env)
    os.environ["RSAUTH_WORKGROUP"] = sandbox.workgroup
workgroup = os.environ["RSAUTH_WORKGROUP"]

# %% [markdown]
# ## Who am I, and until when?
#
# In Jupyter the last expression of a cell is shown with `_repr_html_`: a small
# table with the password masked and the time left.

# %%
credentials = rsauth.get_credentials(workgroup=workgroup)
print(repr(credentials))  # in Jupyter, just: credentials
print(f"expires in {credentials.expires_in:.0f} s" if credentials.expires_in else "no expiry")

# %% [markdown]
# ## pandas
#
# `pandas.read_sql` takes the rsauth connection directly. pandas warns that it
# tests only SQLAlchemy and sqlite3 connections; the query runs all the same
# (see `examples/sqlalchemy_pandas.py` for a SQLAlchemy engine).

# %%
query = "select n, n * n as square from generate_series(1, 5) as s(n)"
with rsauth.connect(workgroup=workgroup) as connection, warnings.catch_warnings():
    warnings.filterwarnings("ignore", "pandas only supports SQLAlchemy", UserWarning)
    squares = pandas.read_sql(query, connection)
print(squares)

# %% [markdown]
# ## awswrangler
#
# awswrangler's Redshift functions take a `redshift_connector` connection, which
# is what `rsauth.connect` returns.

# %%
with rsauth.connect(workgroup=workgroup) as connection:
    frame = awswrangler.redshift.read_sql_query(
        "select current_user as who, current_database() as db", con=connection
    )
print(frame)

# %%
if sandbox is not None:
    sandbox.stop()
