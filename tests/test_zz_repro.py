import time, httpx
from conftest import FACES, OBAMA, BIDEN, wait_job, wait_task

def test_repro(service):
    api = httpx.Client(base_url=service.url, headers=service.headers(), timeout=120)
    for route in ("/distribution/loadDirs", "/distribution/startAutoDistrib"):
        wait_job(api, service, api.get(route).json())
    while not all(s and s["pending"] == 0 for s in api.get("/stats").json()["shards"].values()):
        time.sleep(0.2)
    photos = [OBAMA / "obama2.jpg", BIDEN / "biden.jpg", OBAMA / "obama3.jpg", OBAMA / "obama.jpg"]
    for rnd in range(2):
        ids = [api.post("/createTask", files={"filedata": (p.name, p.read_bytes())}).json() for p in photos]
        for p, i in zip(photos, ids):
            t = wait_task(api, service, i)
            print(rnd, "concurrent", p.name, t["found"], t["distance"], t["timings"].get("encode_ms"), t.get("reason"))
    for p in photos:
        t = wait_task(api, service, api.post("/createTask", files={"filedata": (p.name, p.read_bytes())}).json())
        print("sequential", p.name, t["found"], t["distance"], t["timings"].get("encode_ms"))
