"""One Streamlit page per module; the router in ``web_ui/streamlit_app.py`` decides which are shown."""
