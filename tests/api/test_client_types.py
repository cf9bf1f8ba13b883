"""The client's TypedDicts must name exactly the fields of the API's response schemas."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from hpo_service import client_types as ct
from hpo_service.api import schemas

PAIRS: list[tuple[type, type[BaseModel]]] = [
    (ct.StudyInfo, schemas.StudyOut), (ct.StudyPage, schemas.StudyPage), (ct.TrialInfo, schemas.TrialOut),
    (ct.TrialPage, schemas.TrialPage), (ct.BestTrial, schemas.BestTrialOut), (ct.ReportInfo, schemas.ReportOut),
    (ct.RungResultInfo, schemas.RungResultOut), (ct.DecisionInfo, schemas.DecisionOut),
    (ct.TrialDetail, schemas.TrialDetailOut), (ct.RungInfo, schemas.RungOut), (ct.Lease, schemas.LeaseOut),
    (ct.Ack, schemas.AckOut), (ct.TrialStateInfo, schemas.TrialStateOut), (ct.TokenInfo, schemas.TokenOut),
    (ct.TokenCreated, schemas.TokenCreatedOut), (ct.WhoAmI, schemas.WhoAmIOut), (ct.Health, schemas.HealthOut),
    (ct.BestRef, schemas.BestOut),
]


@pytest.mark.parametrize(("typed", "schema"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_typed_dict_matches_schema(typed: type, schema: type[BaseModel]) -> None:
    assert set(typing.get_type_hints(typed)) == set(schema.model_fields)
