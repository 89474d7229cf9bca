"""The API keys page: create a key (its secret shown once), see what each key spent, revoke one."""

from __future__ import annotations

import re
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
    assert "You have no active API key. Create one above to let a program call mlmarket." in texts(at)
    at.text_input(key="api_key_name").input("nightly batch")
    at.multiselect(key="api_key_scopes").set_value(["predict", "read"])
    at.number_input(key="api_key_limit").set_value(100)
    next(b for b in at.button if b.label == "Create the key").click()
    at.run()
    no_exceptions(at)
    (secret,) = [c.value for c in at.code]
    assert "Copy the key now: it is shown only this once" in texts(at)
    assert at.text_input(key="api_key_name").value == ""  # the form is ready for the next key
    wallet = httpx.get(f"{live_api.url}/api/v1/wallet", headers={"Authorization": f"Bearer {secret}"})
    assert wallet.status_code == 200 and wallet.json()["balance"] == 5
    keys = at.dataframe[0].value
    assert keys["name"].tolist() == ["nightly batch"]
    assert keys["scopes"].tolist() == ["predict, read"]
    assert keys["spent this month (credits)"].tolist() == ["0 of 100"]
    assert keys["last used"].tolist() == ["never"]
    assert keys["expires"].tolist() == ["no expiry"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", keys["created"].iloc[0])
    assert secret not in " ".join(keys.astype(str).to_numpy().ravel())

    at.run()  # the secret is not shown again
    assert not at.code

    at.checkbox(key=f"revoke_sure-{at.selectbox(key='revoke_key').value}").check().run()
    at.button(key="revoke_button").click().run()
    no_exceptions(at)
    assert "Key nightly batch is revoked: programs that send it are refused from now on." in [
        s.value for s in at.success
    ]
    refused = httpx.get(f"{live_api.url}/api/v1/wallet", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert "You have no active API key." in texts(at)
    assert "You have no API key yet." not in texts(at)
    assert [e.label for e in at.expander if e.label.startswith("Revoked")] == ["Revoked keys (1)"]
    (revoked,) = [d.value for d in at.dataframe]
    assert revoked["name"].tolist() == ["nightly batch"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", revoked["revoked"].iloc[0])
    assert not [s for s in at.selectbox if s.key == "revoke_key"]  # nothing left to revoke


def test_used_and_expiring_keys_show_when_in_words(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=1)
    expiring = live_api.call(
        "POST",
        "/api-keys",
        person.token,
        json={"name": "until new year", "expires_at": "2099-12-31T23:59:00Z", "monthly_spend_limit": 5},
    )
    live_api.call("POST", "/api-keys", person.token, json={"name": "forever"})
    wallet = httpx.get(f"{live_api.url}/api/v1/wallet", headers={"Authorization": f"Bearer {expiring['key']}"})
    assert wallet.status_code == 200
    at = app_as(person, PAGE)
    no_exceptions(at)
    keys = at.dataframe[0].value.set_index("name")
    assert keys.loc["until new year", "expires"] == "2099-12-31 23:59 UTC"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", keys.loc["until new year", "last used"])
    assert keys.loc["forever", "expires"] == "no expiry"
    assert keys.loc["forever", "last used"] == "never"
    assert "None" not in " ".join(keys.astype(str).to_numpy().ravel())


def test_a_key_the_api_refuses_is_said_in_a_sentence(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person()
    for number in range(100):  # the most keys one person may hold
        live_api.call("POST", "/api-keys", person.token, json={"name": f"key {number}"})
    at = app_as(person, PAGE)
    at.text_input(key="api_key_name").input("one too many")
    next(b for b in at.button if b.label == "Create the key").click()
    at.run()
    no_exceptions(at)
    assert [e.value for e in at.error] == ["The key was not created. At most 100 API keys per user; revoke one first."]
    assert not at.code
