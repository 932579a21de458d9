"""`POST /api/v1/floor`: a view that does nothing, served by the same
gunicorn workers through the same middleware as the API (the per-key rate
limit counts it in Redis), so that its rate is the most any API endpoint can
get on this machine: the ceiling under the consume figure.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config.urls import urlpatterns as product_urls


@csrf_exempt
@require_POST
def floor(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"allowed": True})


urlpatterns = [path("api/v1/floor", floor), *product_urls]
