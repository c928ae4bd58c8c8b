from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.urls import path


async def async_view(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    return JsonResponse({"view": "async", "method": request.method,
                         "q": request.GET.get("q"), "body": request.body.decode()})


def blocking_lookup(name: str) -> dict:
    # Runs on Django's thread (sync_to_async), not on the event loop.
    return {"name": name, "thread": threading.current_thread().name}


async def sync_through_async_view(request: HttpRequest) -> JsonResponse:
    result = await sync_to_async(blocking_lookup)(request.GET.get("name", "nobody"))
    result["loop_thread"] = threading.current_thread().name
    return JsonResponse(result)


def sync_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"view": "sync", "path": request.path})


urlpatterns = [
    path("async/", async_view),
    path("sync-to-async/", sync_through_async_view),
    path("sync/", sync_view),
]
