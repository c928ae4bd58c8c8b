"""ASGI entry point: python -m parallio asgi examples.asgi_django.asgi:application"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.asgi_django.settings")
application = get_asgi_application()
