-- cachesync.key(): the key layout and its escaping rule.
CREATE TABLE k1 (id int PRIMARY KEY, v text);
CREATE TABLE k2 (a text NOT NULL, b int NOT NULL, v text, PRIMARY KEY (a, b));
CREATE TABLE k3 (u uuid PRIMARY KEY, d date);
SET client_min_messages = warning;
SELECT cachesync.register('k1');
SELECT cachesync.register('k2');
SELECT cachesync.register('k3', key_prefix => 'uuids/');
RESET client_min_messages;

SELECT cachesync.key('k1', '42');
-- values are normalised through the column's type
SELECT cachesync.key('k1', '042');
SELECT cachesync.key('k1', ' 7');
SELECT cachesync.key('k3', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11');
-- ':' and '\' are escaped with '\'
SELECT cachesync.key('k2', 'a:b', '1');
SELECT cachesync.key('k2', 'back\slash', '2');
SELECT cachesync.key('k2', ':\:', '3');
-- empty, Unicode, very long values
SELECT cachesync.key('k2', '', '4');
SELECT cachesync.key('k2', 'grüße 東京 🐘', '5');
SELECT length(cachesync.key('k2', repeat('x', 100000), '6'));
SELECT cachesync.key('k2', VARIADIC ARRAY['arr', '7']);
-- the global prefix is server-wide: it cannot differ between sessions
SET cachesync.key_prefix = 'app1:';

-- errors
SELECT cachesync.key('k1', 'forty-two');
SELECT cachesync.key('k1', '1', '2');
SELECT cachesync.key('k2', 'a');
SELECT cachesync.key('k2', 'a', NULL);
SELECT cachesync.key('k1', VARIADIC ARRAY[]::text[]);
CREATE TABLE not_registered (id int PRIMARY KEY);
SELECT cachesync.key('not_registered', '1');
SELECT cachesync.key(NULL, '1');

DROP TABLE k1, k2, k3, not_registered;
