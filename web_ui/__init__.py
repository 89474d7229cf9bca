"""The mlmarket web UI: a Streamlit app that talks to the mlmarket API over HTTP only."""
