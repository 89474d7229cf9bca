from fastapi import APIRouter

from app.api.routes import (
    admin,
    algorithms,
    api_keys,
    auth,
    datasets,
    models,
    prediction_events,
    prediction_reads,
    prediction_results,
    predictions,
    publishing,
    training_jobs,
    users,
    wallet,
    webhooks,
    workers,
)

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)
api_router.include_router(users.router)
api_router.include_router(wallet.router)
api_router.include_router(models.router)
# /predictions: submitting, reading, results, events - in the order of the paths of the OpenAPI document
api_router.include_router(predictions.router)
api_router.include_router(prediction_reads.router)
api_router.include_router(prediction_results.router)
api_router.include_router(prediction_events.router)
api_router.include_router(datasets.router)
api_router.include_router(algorithms.router)
api_router.include_router(training_jobs.router)
api_router.include_router(publishing.router)
api_router.include_router(api_keys.router)
api_router.include_router(webhooks.router)
api_router.include_router(admin.router)
api_router.include_router(workers.router)
