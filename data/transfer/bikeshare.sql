-- A bike-share scheme, written by hand for the course's transfer check (CC0).
-- Not made by course_utils.data: its layout (a rider's name in two columns, a 0/1 flag,
-- two foreign keys to the same table) is one the generator never produces.
CREATE TABLE stations (
    station_id INTEGER PRIMARY KEY,
    station_name TEXT NOT NULL,
    district TEXT,
    docks INTEGER
);
CREATE TABLE bikes (
    bike_id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL,
    model TEXT,
    is_electric INTEGER,
    home_station INTEGER REFERENCES stations(station_id),
    purchased DATE
);
CREATE TABLE riders (
    rider_id INTEGER PRIMARY KEY,
    first_name TEXT,
    last_name TEXT,
    plan TEXT,
    signup_date DATE,
    email TEXT
);
CREATE TABLE trips (
    trip_id INTEGER PRIMARY KEY,
    rider_id INTEGER REFERENCES riders(rider_id),
    bike_id INTEGER REFERENCES bikes(bike_id),
    start_station INTEGER REFERENCES stations(station_id),
    end_station INTEGER REFERENCES stations(station_id),
    started_at DATE,
    minutes INTEGER,
    fare REAL
);
INSERT INTO stations VALUES
    (1, 'Harbour Gate', 'Docklands', 24),
    (2, 'Market Square', 'Old Town', 18),
    (3, 'Mill Lane', 'Riverside', 12),
    (4, 'North Park', 'Uplands', 30),
    (5, 'Bridge Street', 'Riverside', 16),
    (6, 'Museum Row', 'Old Town', 10);
INSERT INTO bikes VALUES
    (1, 'SN-1001', 'Urban 3', 0, 1, '2020-04-12'),
    (2, 'SN-1002', 'Urban 3', 0, 2, '2020-05-03'),
    (3, 'SN-1003', 'Volt E', 1, 1, '2021-02-17'),
    (4, 'SN-1004', 'Volt E', 1, 3, '2021-06-30'),
    (5, 'SN-1005', 'Urban 3', 0, 4, '2021-09-08'),
    (6, 'SN-1006', 'Trail X', 0, 5, '2022-01-20'),
    (7, 'SN-1007', 'Volt E', 1, 1, '2022-03-14'),
    (8, 'SN-1008', 'Urban 3', 0, 6, '2022-07-01'),
    (9, 'SN-1009', 'Trail X', 0, 4, '2023-02-11'),
    (10, 'SN-1010', 'Volt E Max', 1, 2, '2023-05-25'),
    (11, 'SN-1011', 'Urban 3', 0, 3, '2023-08-09'),
    (12, 'SN-1012', 'Volt E', 1, 5, '2024-01-15');
INSERT INTO riders VALUES
    (1, 'Ada', 'Brennan', 'annual', '2022-03-01', 'ada@example.org'),
    (2, 'Tomas', 'Okoro', 'monthly', '2022-11-15', NULL),
    (3, 'Lin', 'Haddad', 'pay-as-you-go', '2023-01-09', 'lin@example.org'),
    (4, 'Marta', 'Quist', 'annual', '2023-04-22', NULL),
    (5, 'Joe', 'Fenwick', 'monthly', '2023-07-03', 'joe@example.org'),
    (6, 'Priya', 'Sandoval', 'annual', '2023-09-18', 'priya@example.org'),
    (7, 'Ken', 'Abara', 'pay-as-you-go', '2023-12-05', NULL),
    (8, 'Rosa', 'Lindqvist', 'monthly', '2024-01-30', 'rosa@example.org'),
    (9, 'Sam', 'Ortega', 'annual', '2024-02-14', 'sam@example.org'),
    (10, 'Noor', 'Kaplan', 'pay-as-you-go', '2024-03-03', NULL);
INSERT INTO trips VALUES
    (1, 1, 1, 1, 2, '2024-03-01', 12, 1.80),
    (2, 2, 3, 2, 3, '2024-03-01', 25, 3.10),
    (3, 3, 4, 3, 5, '2024-03-02', 8, 1.20),
    (4, 1, 7, 1, 4, '2024-03-02', 41, 5.60),
    (5, 4, 2, 2, 6, '2024-03-02', 17, 2.30),
    (6, 5, 5, 4, 1, '2024-03-03', 33, 4.40),
    (7, 6, 10, 2, 3, '2024-03-03', 22, 3.40),
    (8, 7, 6, 5, 3, '2024-03-04', 54, 7.90),
    (9, 1, 3, 1, 5, '2024-03-04', 19, 2.70),
    (10, 8, 8, 6, 2, '2024-03-05', 11, 1.60),
    (11, 9, 12, 5, 1, '2024-03-05', 28, 3.90),
    (12, 3, 9, 4, 4, '2024-03-06', 65, 8.80),
    (13, 2, 1, 1, 2, '2024-03-06', 14, 2.00),
    (14, 6, 4, 3, 6, '2024-03-07', 37, 5.10),
    (15, 10, 11, 3, 5, '2024-03-07', 9, 1.40),
    (16, 1, 7, 1, 3, '2024-03-08', 23, 3.20),
    (17, 5, 2, 2, 1, '2024-03-08', 46, 6.20),
    (18, 7, 10, 2, 4, '2024-03-09', 31, 4.70),
    (19, 4, 5, 4, 2, '2024-03-09', 16, 2.20),
    (20, 9, 3, 1, 5, '2024-03-10', 27, 3.70),
    (21, 6, 6, 5, 5, '2024-03-10', 72, 9.50),
    (22, 8, 8, 6, 1, '2024-03-11', 13, 1.90),
    (23, 1, 12, 5, 3, '2024-03-11', 35, 4.90),
    (24, 3, 1, 1, 6, '2024-03-12', 21, 2.90),
    (25, 2, 9, 4, 2, '2024-03-12', 44, 6.00),
    (26, 10, 4, 3, 3, '2024-03-13', 18, 2.50),
    (27, 5, 11, 3, 1, '2024-03-13', 26, 3.50),
    (28, 6, 7, 1, 2, '2024-03-14', 39, 5.30),
    (29, 9, 10, 2, 5, '2024-03-14', 15, 2.10),
    (30, 7, 5, 4, 4, '2024-03-15', 48, 6.60);
