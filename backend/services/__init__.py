"""What the routes ask for, one module per resource: SQL, commits, rollbacks and dispatching.

Services raise the errors of backend.services.errors; backend.app turns them into HTTP answers,
so a service can be called from anything (a route, the reaper, a test) without FastAPI.
"""
