DROP TRIGGER auth_events_hours_counted ON auth_events;
DROP FUNCTION count_event_hours();
DROP TABLE event_hours;
