"""A bare Django app: one view that does nothing, no installed apps, no
middleware, no database. Served by the same gunicorn as the product, it is
the least a Django request costs here: what the API's own do-nothing view
(bench/floor_settings.py) is compared with.
"""

SECRET_KEY = "bench-bare-app-not-a-secret-xxxxxxxxxxxxxxxxxxxxxxxxxxxx"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.bare_urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
