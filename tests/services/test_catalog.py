"""Catalog rules that do not need a trained model."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.errors import Unprocessable
from app.models.catalog import ModelTask
from app.runtime.schema import Feature
from app.services import catalog
from app.store.base import ArtifactRef


@pytest.mark.parametrize("name", ["wine-forest\n", "wine-forest\r\n", "Wine", "-wine", "wine forest", "w" * 64])
def test_a_name_that_is_not_exactly_the_pattern_is_refused(engine: Engine, name: str) -> None:
    """A trailing newline would make a lookalike of another author's model."""
    with Session(engine) as session, pytest.raises(Unprocessable):
        catalog.publish_version(
            session,
            name=name,
            task=ModelTask.regression,
            algorithm="LinearRegression",
            price_per_row=1,
            features=[Feature(name="x", type="number")],
            artifact=ArtifactRef(md5="0" * 32, size=1, path="x"),
            owner_id=None,
        )
