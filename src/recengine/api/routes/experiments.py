"""``GET /api/v1/admin/experiments``: the readout of an experiment (behind ``X-API-Key``, like the other admin routes).

The figures and their methods are described in ``serving/readout.py``; the body mirrors :class:`ExperimentReadout`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.responses import Response

from recengine.api.deps import AdminDep, GatewayDep
from recengine.errors import NotFound
from recengine.serving.readout import report

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses={
        401: {"description": "No X-API-Key header."},
        403: {"description": "Wrong API key."},
        404: {
            "description": "Admin API disabled, impressions not recorded (serving.impressions = false), or an "
            "experiment that is not configured and has no retained impressions."
        },
    },
)


class Rate(BaseModel):
    value: float | None = Field(description="null when there are no trials.")
    ci_low: float
    ci_high: float


class HitRate(Rate):
    users: int = Field(description="Users whose next event after an answer arrived within the attribution window.")
    hits: int = Field(description="Those whose next event was in the top K of their last such answer.")


class ZTest(BaseModel):
    diff: float | None = Field(description="This arm's rate minus the control's.")
    z: float | None
    p_value: float | None = Field(description="Two-sided; null when the test is undefined (an empty arm).")


class VsControl(BaseModel):
    ctr: ZTest
    hr_at_k: ZTest


class ArmReadout(BaseModel):
    arm: str
    users: int
    impressions: int
    attributed_events: int
    clicked_impressions: int = Field(description="Impressions with at least one attributed event.")
    ctr: Rate = Field(description="clicked_impressions / impressions, with a 95 % Wilson interval.")
    hr_at_k: HitRate = Field(description="Online HR@K, with a 95 % Wilson interval.")
    vs_control: VsControl | None = Field(description="null for the control (the first arm).")


class SignTest(BaseModel):
    p_value: float
    method: str


class InterleaveReadout(BaseModel):
    engines: list[str] = Field(description="[A, B]: wins are users who clicked more of A's items than of B's.")
    users: int
    impressions: int
    attributed_events: int
    credited: dict[str, int] = Field(description="Attributed events per engine credited.")
    users_with_clicks: int
    wins: int
    ties: int
    losses: int
    sign_test: SignTest
    note: str


class Methods(BaseModel):
    ci: str
    test: str
    sign_test: str


class ExperimentReadout(BaseModel):
    experiment: str
    mode: Literal["split", "interleave"]
    configured: bool = Field(description="Whether this is the experiment routing.experiment configures now.")
    k: int
    control: str | None = Field(description="The arm the others are tested against (the first configured arm).")
    since: float | None = Field(description="Unix time of the oldest retained impression.")
    until: float | None
    arms: list[ArmReadout]
    interleave: InterleaveReadout | None
    methods: Methods


@router.get(
    "/experiments",
    response_model=ExperimentReadout,
    summary="Experiment readout: per arm users, impressions, attributed events, CTR and online HR@K with 95 % "
    "intervals and a z-test against the control; interleaving wins/ties/losses with a sign test",
)
async def experiment_readout(
    gateway: GatewayDep,
    experiment: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="Default: the configured routing.experiment.name."),
    ] = None,
    k: Annotated[int, Query(ge=1, le=10_000, description="The K of online HR@K; at most serving.max_k.")] = 10,
) -> Response:
    max_k = gateway.settings.serving.max_k
    if k > max_k:
        raise RequestValidationError(
            [{"loc": ("query", "k"), "msg": f"Input should be less than or equal to {max_k} (serving.max_k)"}]
        )
    if gateway.attribution is None:
        raise NotFound("impressions are not recorded (serving.impressions = false): there is nothing to read out")
    if gateway.attribution.recorder is not None:
        await gateway.attribution.recorder.flush()  # this worker's latest answers count
    body = await report(gateway.attribution.store, gateway.settings.routing.experiment, experiment, k)
    return Response(orjson.dumps(body), media_type="application/json")
