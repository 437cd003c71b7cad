"""TensorFlow-Serving style status and metadata API under /v1, in the shapes OVMS answers them
(ovmsclient, OVMS's own client, parses exactly these). Version 0 means "unspecified", as in OVMS and
TF Serving: ovmsclient sends it when the caller gives no version."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.api.paths import ModelRoutes, known_models, parse_model_path
from server.errors import NotFound
from server.pipelines.base import TensorSpec
from server.repository.manager import ModelView

bp = Blueprint("tfs", version=1)

ROUTES = ModelRoutes(
    base="/v1/models/",
    usage="GET /v1/models/{id}, GET /v1/models/{id}/versions/{v}, GET /v1/models/{id}[/versions/{v}]/metadata",
    actions=("metadata",),
    zero_is_default=True,
)

# KServe datatypes (TensorSpec) -> tensorflow.DataType names.
TF_DTYPES = {
    "BOOL": "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32", "UINT64": "DT_UINT64",
    "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64",
    "FP16": "DT_HALF", "BF16": "DT_BFLOAT16", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "BYTES": "DT_STRING",
}


def version_status(view: ModelView, version: int | None = None) -> dict:
    """GetModelStatusResponse: every version, or the one asked for."""
    entries = [v for v in view.versions if version is None or v.version == version]
    if version is not None and not entries:
        raise NotFound(f"The model '{view.model_id}' has no version {version}", code="model_version_not_found")
    return {
        "model_version_status": [
            {
                "version": str(v.version),
                "state": v.state.value,
                "status": {"error_code": v.error_code, "error_message": v.error_message},
            }
            for v in entries
        ]
    }


def _tensor_info(spec: TensorSpec) -> dict:
    return {
        "name": spec.name,
        "dtype": TF_DTYPES.get(spec.datatype, "DT_INVALID"),
        "tensorShape": {"dim": [{"size": str(size)} for size in spec.shape]},  # int64 as a string; -1: dynamic
    }


def model_metadata(model_id: str, version: int, inputs: tuple[TensorSpec, ...],
                   outputs: tuple[TensorSpec, ...]) -> dict:
    """GetModelMetadataResponse in proto3 JSON with lowerCamelCase names, as OVMS renders it."""
    return {
        "modelSpec": {"name": model_id, "signatureName": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signatureDef": {
                    "serving_default": {
                        "inputs": {spec.name: _tensor_info(spec) for spec in inputs},
                        "outputs": {spec.name: _tensor_info(spec) for spec in outputs},
                        "methodName": "tensorflow/serving/predict",
                    }
                },
            }
        },
    }


@bp.get("/models/<rest:path>")
async def model_status_or_metadata(request: Request, rest: str) -> HTTPResponse:
    manager = request.app.ctx.manager
    path = parse_model_path(rest, ROUTES, known_models(manager))
    if path.action == "metadata":
        instance = manager.resolve(path.model_id, path.version)  # unspecified: the newest available version
        metadata = instance.metadata
        return json(model_metadata(path.model_id, instance.version, metadata.inputs, metadata.outputs))
    return json(version_status(manager.describe(path.model_id), path.version))


@bp.get("/config")
async def config_status(request: Request) -> HTTPResponse:
    return json({view.model_id: version_status(view) for view in request.app.ctx.manager.describe_all()})


@bp.post("/config/reload")
async def config_reload(request: Request) -> HTTPResponse:
    manager = request.app.ctx.manager
    await manager.rescan(wait=True)
    return json({view.model_id: version_status(view) for view in manager.describe_all()})
