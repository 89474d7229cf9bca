"""The tabs of the training studio page (web_ui/app_pages/studio.py), one module each."""
