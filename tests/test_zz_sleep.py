import time
def test_sleep(mariadb_server, mongo_server, mosquitto_server):
    time.sleep(60)
