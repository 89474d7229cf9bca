"""The API keys page: create a key (its secret shown once), see what each key spent, revoke one."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts

PAGE = "app_pages/api_keys.py"


def test_create_a_key_copy_it_once_and_revoke_it(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    at = app_as(person, PAGE)
    no_exceptions(at)
    assert "You have no API key yet." in texts(at)
    at.text_input(key="api_key_name").input("nightly batch")
    at.multiselect(key="api_key_scopes").set_value(["predict", "read"])
    at.number_input(key="api_key_limit").set_value(100)
    next(b for b in at.button if b.label == "Create the key").click()
    at.run()
    no_exceptions(at)
    (secret,) = [c.value for c in at.code]
    assert "Copy the key now: it is shown only this once" in texts(at)
    wallet = httpx.get(f"{live_api.url}/api/v1/wallet", headers={"Authorization": f"Bearer {secret}"})
    assert wallet.status_code == 200 and wallet.json()["balance"] == 5
    keys = at.dataframe[0].value
    assert keys["name"].tolist() == ["nightly batch"]
    assert keys["scopes"].tolist() == ["predict, read"]
    assert keys["spent this month (credits)"].tolist() == ["0 of 100"]
    assert secret not in " ".join(keys.astype(str).to_numpy().ravel())

    at.run()  # the secret is not shown again
    assert not at.code

    at.checkbox(key=f"revoke_sure-{at.selectbox(key='revoke_key').value}").check().run()
    at.button(key="revoke_button").click().run()
    no_exceptions(at)
    assert "Key nightly batch is revoked." in [s.value for s in at.success]
    refused = httpx.get(f"{live_api.url}/api/v1/wallet", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
